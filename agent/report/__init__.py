"""The study report: a sweep's runs from either source (`study`), their numbers (`stats`), the
step-level losses (`curves`), the figures (`figures`, `study_figures`), the sections
(`setup_section`, `runs_section`, `seeds_section`, `discussion`, `weights_section`, sharing
`markdown.Context`), the document (`document`, `python -m agent.report`), and repeat sweeps
(`repeat`)."""
