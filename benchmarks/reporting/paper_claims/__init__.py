"""The papers' claims, checked: quoted from the seed talks (`sources.py`), declared as data (`declared.py`), measured
from study files and tier records (`evidence.py`), judged by intervals (`rules.py`), rendered (`board.py`)."""
