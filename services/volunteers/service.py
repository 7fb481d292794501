"""The volunteers service's definition: what the kernel needs to run its API and workers."""

from services.kernel.service import ServiceDefinition, Subscription

# Labour delivered to a co-creation project is credited to the contributor's card. The handlers
# for the projects topic come with the card domain; until then the consumer
# reads the topic, applies nothing and records nothing (only applied effects enter the inbox).
DEFINITION = ServiceDefinition(
    name="volunteers",
    title="义工卡 volunteers",
    description="The volunteer card (义工卡): activities, hours, points, star levels, rewards, certificates.",
    subscriptions=(
        Subscription(group="volunteers.project-labour", topics=("projects.events",),
                     handlers=lambda container: {}),
    ),
)
