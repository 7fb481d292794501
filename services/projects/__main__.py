"""`python -m services.projects relay|consumer GROUP|rebuild|migrate|recover-tail|dead-letters`"""

from services.kernel.service import main
from services.projects.service import DEFINITION

if __name__ == "__main__":
    main(DEFINITION)
