"""PlatformIO dev-platform of tinycil's Cortex-M7 boards.

The toolchain (arm-none-eabi-gcc) and the uploaders (openocd, st-flash) come from the operating
system, so the platform declares no packages and PlatformIO never contacts its registry.
"""

from platformio.public import PlatformBase


class TinycilcortexmPlatform(PlatformBase):
    def is_embedded(self):
        return True
