"""The one Definitions, resources, jobs, schedules, sensors and the command line."""
