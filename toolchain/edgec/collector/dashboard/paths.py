"""The dashboard's page paths, read by the guard in front of it (:mod:`edgec.collector.dashboard`)
and by the pages that serve them (:mod:`edgec.collector.dashboard.pages`)."""

PAGE_PATHS = ("/", "/queue", "/results", "/search")
