"""The bundled task bank: YAML specs in tasks/, example answers in examples/<task id>/."""
