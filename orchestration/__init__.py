"""The one Definitions, resources, jobs, schedules, sensors and the command line."""

from orchestration.settings import pass_settings_down

# Before any asset module loads through orchestration: the assets read their settings from here.
pass_settings_down()
