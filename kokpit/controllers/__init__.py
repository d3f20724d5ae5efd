"""kokpit's operators, one package each: watch these kinds → map events to keys →
``reconcile(request)`` → act through a provider → write status."""
