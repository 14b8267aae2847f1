"""Experiments: one module per notebook, each function ``params -> result dataclass``.

The topic modules (``lecture_lib.adaptive``, ``ics``, ``kronecker``, ``scale_invariance``,
``equilibrium``, ``mechanisms``) hold the lecture's mathematics; the functions here run the
experiments a notebook shows (training families of runs, sweeps, probes) and return plain results
that a panel draws in one line. Nothing here imports plotly or ipywidgets.

====================  ========================================  =============================
module                notebook                                  topic module it builds on
====================  ========================================  =============================
``adaptive``          01 adaptive methods and grafting          :mod:`lecture_lib.adaptive`
``ics``               02 ICS eigenvalues                        :mod:`lecture_lib.ics`
``kronecker``         03 Kronecker spectra                      :mod:`lecture_lib.kronecker`
``implicit_decay``    04 implicit learning-rate decay           :mod:`lecture_lib.scale_invariance`
``equilibrium``       05 weight-decay equilibrium               :mod:`lecture_lib.equilibrium`
``mechanisms``        06 three mechanisms of weight decay       :mod:`lecture_lib.mechanisms`
====================  ========================================  =============================
"""
