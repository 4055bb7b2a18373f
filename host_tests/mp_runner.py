"""Run codec test modules under MicroPython: every test_* function, no pytest.

    micropython mp_runner.py test_concert_tlv [more modules...]

Prints one line per test and exits 1 if any failed.
"""
import sys

failed = 0
count = 0
for name in sys.argv[1:]:
    mod = __import__(name)
    for attr in sorted(dir(mod)):
        if not attr.startswith("test_"):
            continue
        count += 1
        try:
            getattr(mod, attr)()
            print("ok", name, attr)
        except Exception as e:  # report and go on
            failed += 1
            print("FAIL", name, attr)
            sys.print_exception(e)
print("%d tests, %d failed" % (count, failed))
sys.exit(1 if failed else 0)
