"""Set evaluation: a real set against a generated set (or one set alone: ``score``).

* :mod:`.options` -- every metric setting's value for one run (the settings are the metrics' own);
* :mod:`.plan` -- the plan: which metrics (parsed once), what each side keeps, every check before
  extraction;
* :mod:`.results` -- what a run returns (:class:`~.results.Result`) and the names numbers print under;
* :mod:`.compute` -- each chosen metric from extracted features (:func:`~.compute.evaluate_features`);
* :mod:`.per_class` -- the same per class subfolder, and intra-FID;
* :mod:`.spaces` -- several networks in one run, one merged result;
* :mod:`.side_checks`, :mod:`.spread` -- what the inputs rule out before extraction, and feature
  sets that collapsed after it;
* :mod:`.streaming` -- the training-loop :class:`~.streaming.Evaluator`;
* :mod:`.distributed` -- torchrun: process groups, shards, gathers;
* :mod:`.run` -- :func:`~.run.evaluate`, :func:`~.run.score`, :func:`~.run.compute_stats`: the
  routes that run a plan in one process or as one rank;
* :mod:`.adm` -- the ADM suite (``--suite adm``) and its batch files.

The public names are re-exported by :mod:`imgdist`; this package imports nothing on its own, so
that the CLI can read the metric registry without torch.
"""
