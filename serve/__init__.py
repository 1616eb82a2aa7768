"""lipx.serve: many streams from one loaded model over WebSocket (``lipx serve``)."""
