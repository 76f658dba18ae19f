"""Set evaluation: a real set against a generated set.

* :mod:`.catalogue` -- the metric catalogue: one entry per metric, and the settings table;
* :mod:`.results` -- what a run returns (:class:`~.results.Result`) and the names numbers print under;
* :mod:`.compute` -- each chosen metric from extracted features (:func:`~.compute.evaluate_features`);
* :mod:`.per_class` -- the same per class subfolder, and intra-FID;
* :mod:`.side_checks`, :mod:`.spread` -- what the inputs rule out before extraction, and feature
  sets that collapsed after it;
* :mod:`.run` -- :func:`~.run.evaluate`, :func:`~.run.compute_stats` and the streaming :class:`~.run.Evaluator`;
* :mod:`.adm` -- the ADM suite (``--suite adm``) and its batch files.

Imports go one way, down this list. The public names are re-exported by :mod:`imgdist`; this
package imports nothing on its own, so that the CLI can read the catalogue without torch.
"""
