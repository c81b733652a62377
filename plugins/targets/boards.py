"""Built-in targets (host, Cortex-M0+/M4/M7/M55, AVR, Xtensa: tinycc.targets) and board presets on them: RAM/flash
budgets (bytes available to the application) and Arduino FQBNs.

Numbers are the microcontroller's SRAM and flash from the vendors' datasheets, minus what the
standard Arduino bootloader reserves where one is installed (Uno: 0.5 KB, Mega 2560: 8 KB).
"""
from __future__ import annotations

from typing import Any

import pluggy

from ...session import Board
from ...targets import AVR, BUILTIN_TARGETS, CORTEX_M0PLUS, CORTEX_M4, CORTEX_M7, CORTEX_M55, XTENSA

hookimpl = pluggy.HookimplMarker("tinycc")
K = 1024
# the emulated boards' data SRAM (4 MB in the demo's linker scripts) holds, besides the model, the scripts' 64 KB
# heap and the demo's own buffers and C library data (2-3 KB for the MLPerf Tiny models): 320 KB kept for them
QEMU_DEMO_RESERVE = 320 * K

BOARDS = (
    Board("uno", 2 * K, 32 * K - 512, "avr", "arduino:avr:uno", "Arduino Uno, ATmega328P", AVR),
    Board("mega2560", 8 * K, 256 * K - 8 * K, "avr", "arduino:avr:mega:cpu=atmega2560", "Arduino Mega 2560", AVR),
    Board("nano33ble", 256 * K, 1024 * K, "cortex-m4", "arduino:mbed_nano:nano33ble", "Nano 33 BLE, nRF52840",
          CORTEX_M4),
    Board("nano33ble_sense", 256 * K, 1024 * K, "cortex-m4", "arduino:mbed_nano:nano33ble", "Nano 33 BLE Sense",
          CORTEX_M4),
    Board("nano_rp2040", 264 * K, 16 * 1024 * K, "cortex-m0plus", "arduino:mbed_nano:nanorp2040connect",
          "Nano RP2040 Connect", CORTEX_M0PLUS),
    Board("esp32", 320 * K, 4 * 1024 * K, "xtensa", "esp32:esp32:esp32", "ESP32 (DRAM available to sketches)",
          XTENSA),
    Board("portenta_h7", 1024 * K, 2 * 1024 * K, "cortex-m7", "arduino:mbed_portenta:envie_m7", "Portenta H7, STM32H747",
          CORTEX_M7),
    Board("stm32f746", 320 * K, 1024 * K, "cortex-m7", "", "STM32F746 (Discovery/Nucleo)", CORTEX_M7),
    Board("cortex_m4", 128 * K, 1024 * K, "cortex-m4", "", "generic Cortex-M4", CORTEX_M4),
    Board("mps2_an386", 4 * 1024 * K - QEMU_DEMO_RESERVE, 4 * 1024 * K, "cortex-m4", "",
          "QEMU mps2-an386 (emulated Cortex-M4)", CORTEX_M4),
    Board("mps3_an547", 4 * 1024 * K - QEMU_DEMO_RESERVE, 2 * 1024 * K, "cortex-m55", "",
          "QEMU mps3-an547 (emulated Cortex-M55)", CORTEX_M55),
)


@hookimpl
def tinycc_register_boards(registry: Any) -> None:
    for t in BUILTIN_TARGETS:
        registry.add_target(t)
    for b in BOARDS:
        registry.add_board(b)
