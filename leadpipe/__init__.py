"""leadpipe's operator side: the `leadpipe` CLI, the embedded runtime, the fake myKaarma."""
