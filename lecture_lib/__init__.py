"""lecture_lib: the science behind the Lecture 5 explorables (CSC 2541, Grosse 2022).

The core (optimizers, models, data, curvature, training) imports only numpy and
torch. The figure and widget layer lives in :mod:`lecture_lib.viz` and is
imported only by notebooks and the app.
"""
__version__ = "0.1.0"
