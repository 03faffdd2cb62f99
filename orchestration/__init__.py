"""The one Definitions, resources, jobs, schedules, sensors and the command line."""

from orchestration.kernel_cache import key_kernel_cache

key_kernel_cache()  # first: importing the settings imports compiled kernels (trading.risk -> strategies)

from orchestration.settings import pass_settings_down  # noqa: E402

# Before any asset module loads through orchestration: the assets read their settings from here.
pass_settings_down()
