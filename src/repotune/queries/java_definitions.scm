; Every class-like and function-like definition of a Java file, at any depth.
; Annotation types (`@interface`) and their elements (`int value() default 0;`) count as an
; interface and its methods; compact record constructors (`R { ... }`) as constructors.
; Anonymous classes (`new Runnable() { ... }`) and lambdas are not definitions (the methods
; declared inside an anonymous class are, see java.py).
(class_declaration) @definition
(interface_declaration) @definition
(annotation_type_declaration) @definition
(enum_declaration) @definition
(record_declaration) @definition
(method_declaration) @definition
(annotation_type_element_declaration) @definition
(constructor_declaration) @definition
(compact_constructor_declaration) @definition
