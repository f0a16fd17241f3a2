; Every class and function definition, at any depth (methods, nested, decorated, async).
; Decorated definitions wrap these nodes; the extractor takes the decorators from the parent.
(function_definition) @definition
(class_definition) @definition
