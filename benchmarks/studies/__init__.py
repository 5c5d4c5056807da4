"""Studies (issue #15): comparisons of several trainings that answer one of the papers' questions.

Each module's `run(...)` trains and measures on CPU in minutes and writes one study file
(`benchmarks/store/studies.py`: `results/<study>/<task>.json`); `benchmarks/reporting/studies.py` renders its table
(and figure) from that file alone. `refinement`: scheduled deepening vs full depth; `compression`: the cheapest
manifestation within 0.5 pt; `memory`: peak training memory of direct vs adjoint backprop, and ODE-Net vs ResNet
parameters; `stiffness`: a spectral-radius penalty's effect.
"""
