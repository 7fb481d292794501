"""Projects service: co-creation projects through the five stages (共谋 共建 共管 共评 共享)."""
