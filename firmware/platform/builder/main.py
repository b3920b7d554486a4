"""SCons build script of the tinycil Cortex-M dev-platform.

Compiler, flags and memory budget come from the board manifest (boards/<board>.json); the
toolchain is the system's arm-none-eabi GCC (Debian: gcc-arm-none-eabi, libnewlib-arm-none-eabi,
libstdc++-arm-none-eabi-newlib). Every build prints the size report and fails when the program
does not fit the board's flash or RAM (the linker script's regions, checked again by PlatformIO).
"""

import datetime
import glob
import os
import shutil
import subprocess
import sys

from SCons.Script import (  # pylint: disable=import-error
    COMMAND_LINE_TARGETS,
    AlwaysBuild,
    Builder,
    Default,
    DefaultEnvironment,
)

env = DefaultEnvironment()
board = env.BoardConfig()
board_id = env.subst("$BOARD")

PREFIX = "arm-none-eabi-"

env.Replace(
    AR=PREFIX + "gcc-ar",
    AS=PREFIX + "as",
    CC=PREFIX + "gcc",
    CXX=PREFIX + "g++",
    GDB=PREFIX + "gdb",
    OBJCOPY=PREFIX + "objcopy",
    RANLIB=PREFIX + "gcc-ranlib",
    SIZETOOL=PREFIX + "size",
    ARFLAGS=["rc"],
    SIZEPRINTCMD="$SIZETOOL -B -d $SOURCES",
    PROGNAME="firmware",
    PROGSUFFIX=".elf",
)

if not shutil.which(env.subst("$CXX"), path=env["ENV"]["PATH"]):
    sys.stderr.write(
        "Error: %s is not on PATH. Install the Arm cross compiler with newlib and libstdc++:\n"
        "  sudo apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi "
        "libstdc++-arm-none-eabi-newlib\n" % env.subst("$CXX")
    )
    env.Exit(1)

# ---- flags --------------------------------------------------------------------------------------
machine_flags = [
    "-mcpu=%s" % board.get("build.cpu"),
    "-mthumb",
    "-mfpu=%s" % board.get("build.fpu"),
    "-mfloat-abi=%s" % board.get("build.float_abi"),
]

env.Append(
    ASFLAGS=machine_flags,
    ASPPFLAGS=machine_flags + ["-x", "assembler-with-cpp"],
    CCFLAGS=machine_flags
    + [
        "-O2",
        "-g3",
        "-Wall",
        "-Wextra",
        "-ffunction-sections",
        "-fdata-sections",
        # Bit-exact agreement with the host build of the same kernels: no silent fusing of
        # a*b+c into FMA; code that wants an FMA calls fmaf explicitly.
        "-ffp-contract=off",
        "-fno-common",
    ],
    CFLAGS=["-std=gnu11"],
    CXXFLAGS=[
        "-std=gnu++17",
        "-fno-exceptions",
        "-fno-rtti",
        "-fno-threadsafe-statics",
        "-fno-use-cxa-atexit",
    ],
    CPPDEFINES=[
        ("F_CPU", "$BOARD_F_CPU"),
        ("TC_BOARD_ID", env.StringifyMacro(board_id)),
    ],
    LINKFLAGS=machine_flags
    + [
        "-O2",
        "--specs=nano.specs",
        "--specs=nosys.specs",
        # lib/bsp provides the reset handler, the vector table and the C++ constructor calls.
        "-nostartfiles",
        "-Wl,--gc-sections",
        "-Wl,--print-memory-usage",
        "-Wl,-Map,%s" % os.path.join("$BUILD_DIR", "firmware.map"),
    ],
    LIBS=["m"],
)

env.ProcessFlags(board.get("build.extra_flags", ""))


def build_id():
    """Short git hash of the checkout (when there is one) and the build date: shown in INFO."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (
        datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
        if epoch
        else datetime.datetime.now(datetime.timezone.utc)
    )
    revision = "nogit"
    try:
        out = subprocess.run(
            ["git", "-C", env.subst("$PROJECT_DIR"), "rev-parse", "--short=10", "HEAD"],
            capture_output=True, text=True, timeout=10, check=False,
        )
        if out.returncode == 0 and out.stdout.strip():
            revision = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "%s-%s" % (revision, when.strftime("%Y%m%d"))  # at most 19 characters


env.Append(CPPDEFINES=[("TC_BUILD_ID", env.StringifyMacro(build_id()))])

# The serial line's baud rate: the board manifest's tinycil.serial.baudrate, the same field the
# host opens the port with, unless the build flags choose another (`tinycil flash --baud N`
# passes -DTC_SERIAL_BAUD=N).
if not any("TC_SERIAL_BAUD" in str(flag) for flag in env.get("BUILD_FLAGS", [])):
    env.Append(CPPDEFINES=[("TC_SERIAL_BAUD", int(board.get("tinycil.serial.baudrate", 115200)))])

# ---- targets ------------------------------------------------------------------------------------
env.Append(
    BUILDERS=dict(
        ElfToBin=Builder(
            action=env.VerboseAction("$OBJCOPY -O binary $SOURCES $TARGET", "Building $TARGET"),
            suffix=".bin",
        ),
        ElfToHex=Builder(
            action=env.VerboseAction("$OBJCOPY -O ihex $SOURCES $TARGET", "Building $TARGET"),
            suffix=".hex",
        ),
    )
)

target_elf = env.BuildProgram()
target_bin = env.ElfToBin(os.path.join("$BUILD_DIR", "${PROGNAME}"), target_elf)
target_hex = env.ElfToHex(os.path.join("$BUILD_DIR", "${PROGNAME}"), target_elf)

AlwaysBuild(env.Alias("nobuild", target_bin))
target_buildprog = env.Alias("buildprog", [target_bin, target_hex], target_bin)

# PlatformIO replaces this with its own "checkprogsize" report (RAM and flash against the board's
# maximum_ram_size / maximum_size) when SIZETOOL is set: that report runs after every build.
target_size = env.Alias("size", target_elf, env.VerboseAction("$SIZEPRINTCMD", "Program size"))
AlwaysBuild(target_size)

# ---- upload -------------------------------------------------------------------------------------
protocol = env.subst("$UPLOAD_PROTOCOL") or board.get("upload.protocol", "")
FLASH_ORIGIN = "0x08000000"


def _need(tool, package):
    if not shutil.which(tool):
        sys.stderr.write(
            "Error: upload protocol '%s' needs `%s`: install it (sudo apt-get install %s) or "
            "choose another upload_protocol (%s).\n"
            % (protocol, tool, package, ", ".join(board.get("upload.protocols", [])))
        )
        env.Exit(1)


def _mass_storage_copy(target, source, env):  # pylint: disable=unused-argument
    label = board.get("tinycil.mass_storage_label", "")
    candidates = []
    if env.subst("$UPLOAD_PORT"):
        candidates.append(env.subst("$UPLOAD_PORT"))
    user = os.environ.get("USER", "")
    for pattern in ("/media/%s/%s" % (user, label), "/media/*/%s" % label, "/media/%s" % label,
                    "/run/media/*/%s" % label, "/mnt/%s" % label, "/Volumes/%s" % label):
        candidates.extend(glob.glob(pattern))
    volumes = [path for path in candidates if os.path.isdir(path)]
    if not volumes:
        sys.stderr.write(
            "Error: no mounted %s drive found. Plug in the board with its ST-LINK USB port and "
            "mount the drive, or pass its mount point with --upload-port.\n" % label
        )
        env.Exit(1)
    firmware = str(source[0])
    destination = os.path.join(volumes[0], os.path.basename(firmware))
    print("Copying %s to %s" % (firmware, destination))
    shutil.copyfile(firmware, destination)
    # The ST-LINK programs the chip once the file is closed and flushed to the drive.
    if hasattr(os, "sync"):
        os.sync()
    return 0


if "upload" in COMMAND_LINE_TARGETS:
    if board.get("tinycil.emulated", False):
        sys.stderr.write(
            "Error: %s is an emulated board and has nothing to upload to. Start it with "
            "`tinycil flash --board %s` (runs QEMU).\n" % (board_id, board_id)
        )
        env.Exit(1)
    if protocol == "openocd":
        _need("openocd", "openocd")
        upload_actions = [
            env.VerboseAction(
                'openocd -f interface/stlink.cfg -f target/stm32f7x.cfg '
                '-c "program {$SOURCE} verify reset exit"',
                "Uploading $SOURCE with openocd",
            )
        ]
        upload_source = target_elf
    elif protocol == "stlink":
        _need("st-flash", "stlink-tools")
        upload_actions = [
            env.VerboseAction(
                "st-flash --reset write $SOURCE %s" % FLASH_ORIGIN,
                "Uploading $SOURCE with st-flash",
            )
        ]
        upload_source = target_bin
    elif protocol in ("mbed", "mass-storage"):
        upload_actions = [env.VerboseAction(_mass_storage_copy, "Uploading $SOURCE by copy")]
        upload_source = target_bin
    else:
        sys.stderr.write(
            "Error: unknown upload_protocol '%s'; this board supports: %s\n"
            % (protocol, ", ".join(board.get("upload.protocols", [])))
        )
        env.Exit(1)
    AlwaysBuild(env.Alias("upload", upload_source, upload_actions))

Default([target_buildprog, target_size])
