# The R side of the shared envelope conformance cases (tests/functions/test_json_runners.py).
add <- function(a, b) a + b
scale <- function(x, factor = 1) x * factor
series <- function(n, step = 1) seq(1.5, by = step, length.out = n)
describe <- function(n, label) list(n = n, label = label)
inner <- function(x) {
  if (x < 0) stop("negative input: ", x)
  x * x
}
square <- function(x) inner(x)
identity_value <- function(x) x
nothing <- function() NULL
lengths_of <- function(...) vapply(list(...), length, integer(1))
