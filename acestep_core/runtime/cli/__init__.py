"""The commands that run models: ``generate`` and ``calibrate``. Their parsers import nothing heavy;
their handlers import the runtime modules they drive."""
