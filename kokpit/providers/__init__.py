"""Edges to the outside world, one small protocol each, with the real implementations beside
them: control-plane runtimes (:mod:`.controlplane`), and later machine executors, repair
actions and metric sources."""
