"""kopf handlers: the only code that imports kopf. Thin: parse, call a reconciler or engine."""
