"""Recommendation: unbounded ids (:mod:`model.reco.ids`) and streaming biased matrix
factorization (:mod:`model.reco.mf`), plain numpy with a C kernel; no Beam."""
