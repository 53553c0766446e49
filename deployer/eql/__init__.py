"""Elasticsearch EQL: parser (``parser.parse``), AST (``ast``) and errors; nothing heavy is imported here."""
