"""The projects service's definition: what the kernel needs to run its API and workers."""

from services.kernel.service import ServiceDefinition

DEFINITION = ServiceDefinition(
    name="projects",
    title="共同缔造 projects",
    description="Co-creation projects through the five stages 共谋 共建 共管 共评 共享, council votes, "
                "contributions and the community fund.",
)
