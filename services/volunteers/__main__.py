"""`python -m services.volunteers relay|consumer GROUP|rebuild|migrate|recover-tail|dead-letters`"""

from services.kernel.service import main
from services.volunteers.service import DEFINITION

if __name__ == "__main__":
    main(DEFINITION)
