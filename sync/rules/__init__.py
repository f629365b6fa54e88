"""What marketers write.

``rules.yaml`` read with its line numbers (``loader``), checked and turned
into the typed model (``schema`` → ``model``), with the condition language
(``expressions``), durations, plain-words YAML errors (``yaml_errors``,
``layout``) and the diagrams (``graph``, ``graph_svg``). Imports no other
layer.
"""
