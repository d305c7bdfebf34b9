"""Background jobs: the queue (`queue`, used by services), what each kind does (`jobs`), and the
loop that runs them (`runner`). Empty on purpose: services import `queue` without the rest."""
