"""`ssd serve`: the detector behind HTTP. A request's picture flows through `uploads` (read, limited,
decoded), `batcher` (gathered with other requests' pictures into one `predict`), and back out of `app`
as JSON; `metrics` counts it all for Prometheus, `page/` is the web page, `ray_app` runs the same app
as Ray Serve replicas."""
