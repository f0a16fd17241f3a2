; Every class-like and function-like definition of a Kotlin file, at any depth.
; Classes, interfaces (`interface`, `fun interface`, `sealed interface`) and enums (`enum class`)
; are all `class_declaration`; the module tells them apart. Extension functions are
; `function_declaration` with a receiver type before the name. Primary constructors belong to
; their class; anonymous functions, lambdas, `object :` expressions, getters/setters and
; `init` blocks are not definitions.
(class_declaration) @definition
(object_declaration) @definition
(companion_object) @definition
(function_declaration) @definition
(secondary_constructor) @definition
