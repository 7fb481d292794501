"""The feedback service's definition: what the kernel needs to run its API and workers."""

from services.kernel.service import ServiceDefinition, Subscription

# Project evaluations (共评) become ratings of the project's responsible unit. The handlers for
# the projects topic come with the rating domain; until then the consumer reads
# the topic, applies nothing and records nothing (only applied effects enter the inbox).
DEFINITION = ServiceDefinition(
    name="feedback",
    title="居民评价 feedback",
    description="Satisfaction ratings (非常满意 … 非常不满意), follow-up of bad ratings, rankings, support plans.",
    subscriptions=(
        Subscription(group="feedback.project-evaluations", topics=("projects.events",),
                     handlers=lambda container: {}),
    ),
)
