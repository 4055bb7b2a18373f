# MicroPython manifest: freeze Understudy into a firmware image, so its
# bytecode runs from flash instead of taking RAM (on a 32-bit board that is
# about 30 KB of heap given back: docs/PERFORMANCE.md).  Include it from the
# manifest you build a board's firmware with, after the port's own:
#
#     include("$(PORT_DIR)/boards/manifest.py")
#     include("/path/to/understudy/manifest.py")
#
#     make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/that/manifest.py
#
# Then copy only main.py, config.json and the TLS files to the board's flash
# (`understudy deploy --frozen`): a firmware/ folder on flash would come
# first on sys.path and shadow the frozen modules.
package("firmware")
package("wire", base_path="lib")
