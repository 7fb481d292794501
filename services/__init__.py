"""The platform's services and their shared infrastructure kernel (``services.kernel``)."""
