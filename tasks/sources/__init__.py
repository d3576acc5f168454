"""Source frameworks the export stage reads: one module each, with ``export`` and ``load_reference``.

``export(params, out_dir) -> ExportedModel`` writes the formats targets compile from;
``load_reference(exported) -> Predict`` runs the source framework itself on CPU, the
baseline every compiled config is judged against.
"""
