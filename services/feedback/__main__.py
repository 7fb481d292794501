"""`python -m services.feedback relay|consumer GROUP|rebuild|migrate|recover-tail|dead-letters|sweep-overdue`"""

from services.kernel.service import main
from services.feedback.service import DEFINITION

if __name__ == "__main__":
    main(DEFINITION)
