"""The simulated parts of a school gate, for the demo, the tests and the benches: the GSM
modem emulator on a pty (modem.py), the stand-in county platform on 127.0.0.1
(platform.py, and slow_platform.py, one that answers badly on purpose) and the builder of
a whole simulated site, its config text and its running pieces (site.py)."""
