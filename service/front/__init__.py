"""The registry front's decisions (web/v2.py serves them): an artifact's documents read
out of its archive (`documents`), what is handed out to a pull and found again by digest
(`artifacts`), and how the front asks for credentials as the upstream does (`auth`)."""
