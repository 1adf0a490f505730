"""The study report: a sweep's runs from either source (`study`), their numbers (`stats`), the
figures (`figures`), the document (`document`, `python -m agent.report`), and repeat sweeps
(`repeat`)."""
