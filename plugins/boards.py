"""Board presets: RAM/flash budgets (bytes available to the application) and Arduino FQBNs.

Numbers are the microcontroller's SRAM and flash from the vendors' datasheets, minus what the
standard Arduino bootloader reserves where one is installed (Uno: 0.5 KB, Mega 2560: 8 KB).
"""
from __future__ import annotations

from typing import Any

import pluggy

from ..session import Board

hookimpl = pluggy.HookimplMarker("tinycc")
K = 1024

BOARDS = (
    Board("uno", 2 * K, 32 * K - 512, "avr", "arduino:avr:uno", "Arduino Uno, ATmega328P"),
    Board("mega2560", 8 * K, 256 * K - 8 * K, "avr", "arduino:avr:mega:cpu=atmega2560", "Arduino Mega 2560"),
    Board("nano33ble", 256 * K, 1024 * K, "cortex-m4", "arduino:mbed_nano:nano33ble", "Nano 33 BLE, nRF52840"),
    Board("nano33ble_sense", 256 * K, 1024 * K, "cortex-m4", "arduino:mbed_nano:nano33ble", "Nano 33 BLE Sense"),
    Board("nano_rp2040", 264 * K, 16 * 1024 * K, "cortex-m0plus", "arduino:mbed_nano:nanorp2040connect",
          "Nano RP2040 Connect"),
    Board("esp32", 320 * K, 4 * 1024 * K, "xtensa", "esp32:esp32:esp32", "ESP32 (DRAM available to sketches)"),
    Board("portenta_h7", 1024 * K, 2 * 1024 * K, "cortex-m7", "arduino:mbed_portenta:envie_m7", "Portenta H7, STM32H747"),
    Board("stm32f746", 320 * K, 1024 * K, "cortex-m7", "", "STM32F746 (Discovery/Nucleo)"),
    Board("cortex_m4", 128 * K, 1024 * K, "cortex-m4", "", "generic Cortex-M4"),
    Board("mps2_an386", 4 * 1024 * K, 4 * 1024 * K, "cortex-m4", "", "QEMU mps2-an386 (emulated Cortex-M4)"),
)


@hookimpl
def tinycc_register_boards(registry: Any) -> None:
    for b in BOARDS:
        registry.add_board(b)
