#!/usr/bin/env Rscript
# batchlaunch's node-side runner for R functions (shipped to nodes as a resource file).
#
#   Rscript run.R --file model.R --function simulate --args args.json --out result.json
#
# args.json is {"args": [...], "kwargs": {...}} (kwargs become named arguments), or
# {"calls": [{"args": [...], "kwargs": {...}}, ...]} for a chunk of calls. JSON arrays of
# scalars of one type arrive as R vectors, objects as named lists. The runner sources the
# file into its own environment, calls the function, and writes result.json atomically
# (temp file + rename) in the working directory:
#
#   {"status": "ok", "value": ..., "runner": "run.R", "language": "r", "version": "4.2.2",
#    "host": ..., "started": ..., "finished": ..., "elapsed_seconds": ..., "warnings": [...]}
#   {"status": "error", "type": "simpleError", "message": "...", "traceback": "...", ...}
#   {"status": "chunk", "outcomes": [{"status": "ok", "value": ...}, {"status": "error", ...}]}
#
# A top-level "error" means nothing ran (file, function or arguments could not be loaded).
# Doubles in plain vectors and lists are written with up to 17 significant digits so they
# round-trip exactly; NA, NaN and infinities become null; length-1 vectors become scalars.
#
# Exit codes: 0 result.json written (the function may still have raised); 2 bad command
# line; 70 result.json could not be written; anything else: R itself died (no result).

RUNNER <- "run.R"
EXIT_USAGE <- 2L
EXIT_RUNNER_FAILED <- 70L
started_at <- Sys.time()

iso_utc <- function(t) format(t, "%Y-%m-%dT%H:%M:%OS3Z", tz = "UTC")

usage <- function(problem) {
  cat("run.R: ", problem, "\nusage: Rscript run.R --file FILE.R --function NAME ",
      "--args ARGS.json --out RESULT.json\n", sep = "", file = stderr())
  quit(save = "no", status = EXIT_USAGE)
}

parse_cli <- function(argv) {
  opts <- list()
  i <- 1L
  while (i <= length(argv)) {
    key <- argv[[i]]
    if (!startsWith(key, "--") || i == length(argv)) usage(paste("unexpected argument", key))
    opts[[substring(key, 3L)]] <- argv[[i + 1L]]
    i <- i + 2L
  }
  for (key in c("file", "function", "args", "out")) {
    if (is.null(opts[[key]])) usage(paste0("missing --", key))
  }
  opts
}

write_atomic <- function(text, path) {
  tmp <- tempfile(".tmp-result-", tmpdir = dirname(normalizePath(path, mustWork = FALSE)))
  con <- file(tmp, open = "wb")
  writeBin(charToRaw(enc2utf8(text)), con)
  close(con)
  if (!file.rename(tmp, path)) stop("could not rename ", tmp, " to ", path)
}

metadata <- function() {
  finished_at <- Sys.time()
  list(
    runner = RUNNER,
    language = "r",
    version = paste(R.version$major, R.version$minor, sep = "."),
    host = Sys.info()[["nodename"]],
    started = iso_utc(started_at),
    finished = iso_utc(finished_at),
    elapsed_seconds = as.numeric(difftime(finished_at, started_at, units = "secs"))
  )
}

opts <- parse_cli(commandArgs(trailingOnly = TRUE))

# Without jsonlite nothing else works: write the error envelope by hand.
if (!requireNamespace("jsonlite", quietly = TRUE)) {
  quote_json <- function(s) {
    s <- gsub("\\", "\\\\", s, fixed = TRUE)
    s <- gsub("\"", "\\\"", s, fixed = TRUE)
    s <- gsub("\n", "\\n", s, fixed = TRUE)
    paste0("\"", s, "\"")
  }
  fields <- c(status = "error", type = "MissingPackage",
              message = paste("the R package jsonlite is not installed on this node;",
                              "add it to [runtime] packages"),
              traceback = "", unlist(metadata()))
  text <- paste0("{", paste0(quote_json(names(fields)), ":", vapply(fields, quote_json, ""),
                             collapse = ","), "}")
  write_atomic(text, opts$out)
  quit(save = "no", status = 0L)
}

# JSON arrays of same-typed scalars become vectors; objects stay named lists.
simplify <- function(x) {
  if (is.integer(x)) return(as.double(x))  # `3` in R source is a double too: no overflow
  if (!is.list(x)) return(x)
  x <- lapply(x, simplify)
  if (!is.null(names(x)) || length(x) == 0L) return(x)
  scalar <- vapply(x, function(e) is.atomic(e) && length(e) == 1L, logical(1))
  if (!all(scalar)) return(x)
  types <- unique(vapply(x, typeof, character(1)))
  if (length(types) == 1L || all(types %in% c("integer", "double"))) return(unlist(x))
  x
}

# Exact doubles: jsonlite's digits = NA stops at 15 significant digits.
exact <- function(x) {
  if (is.list(x) && !is.data.frame(x)) {
    out <- lapply(x, exact)
    names(out) <- names(x)
    return(out)
  }
  if (is.double(x) && is.null(dim(x)) && is.null(oldClass(x))) {
    s <- sprintf("%.15g", x)
    for (digits in c(16L, 17L)) {  # the shortest text that reads back as the same double
      lossy <- is.finite(x) & suppressWarnings(as.numeric(s)) != x
      s[lossy] <- sprintf(paste0("%.", digits, "g"), x[lossy])
    }
    s[!is.finite(x)] <- "null"
    json <- if (length(x) == 1L) s else paste0("[", paste(s, collapse = ","), "]")
    return(structure(json, class = "json"))
  }
  x
}

to_json <- function(x) {
  if (is.null(x)) return("null")
  if (is.function(x) || is.environment(x)) stop("functions and environments have no JSON form")
  as.character(jsonlite::toJSON(exact(x), auto_unbox = TRUE, digits = NA, null = "null",
                                na = "null", json_verbatim = TRUE))
}

format_call <- function(call) {
  text <- paste(deparse(call, width.cutoff = 100L, nlines = 1L), collapse = "")
  if (nchar(text) > 200L) text <- paste0(substr(text, 1L, 197L), "...")
  ref <- attr(call, "srcref")
  if (!is.null(ref)) {
    file <- attr(ref, "srcfile")$filename
    text <- paste0(text, " at ", basename(if (is.null(file)) "?" else file), "#", ref[[1L]])
  }
  text
}

# The calls between the runner's `thunk()` and the error handler, outermost first.
user_calls <- function(calls) {
  heads <- vapply(calls, function(cl) paste(deparse(cl[[1L]]), collapse = ""), character(1))
  first <- match("thunk", heads)
  first <- if (is.na(first)) 1L else first + 1L
  if (first <= length(heads) && heads[[first]] == "do.call") first <- first + 1L
  last <- length(calls) - 1L  # the handler itself
  if (last >= 1L && heads[[last]] == ".handleSimpleError") last <- last - 1L
  if (last < first) return(list())
  calls[first:last]
}

# Run thunk(); an error becomes a list with its class, message and R traceback. With
# `encode`, the value is turned into JSON text here, so one unencodable value fails only
# its own call.
capture <- function(thunk, encode = TRUE) {
  calls <- NULL
  warnings <- character()
  t0 <- Sys.time()
  outcome <- tryCatch(
    withCallingHandlers(
      list(status = "ok", value = thunk()),
      error = function(e) calls <<- sys.calls(),
      warning = function(w) warnings <<- c(warnings, conditionMessage(w))
    ),
    error = function(e) {
      kept <- if (inherits(e, "runner_error")) character() else
        vapply(user_calls(calls), format_call, character(1))
      where <- conditionCall(e)
      head <- if (is.null(where)) "Error: " else paste0("Error in ", format_call(where), ": ")
      lines <- c(paste0(head, conditionMessage(e)))
      if (length(kept) > 0L) {
        lines <- c(lines, "Calls (outermost first):", paste0(seq_along(kept), ": ", kept))
      }
      list(status = "error", type = class(e)[[1L]], classes = setdiff(class(e), "runner_error"),
           message = conditionMessage(e), traceback = paste(lines, collapse = "\n"))
    }
  )
  if (encode && outcome$status == "ok") {
    value <- outcome$value
    outcome$value <- tryCatch(structure(to_json(value), class = "json"), error = function(e) {
      msg <- paste0("the function returned a ", class(value)[[1L]],
                    " that cannot be written as JSON: ", conditionMessage(e))
      structure(msg, class = "failed")
    })
    if (inherits(outcome$value, "failed")) {
      outcome <- list(status = "error", type = "SerializationError",
                      classes = "SerializationError", message = unclass(outcome$value),
                      traceback = unclass(outcome$value))
    }
  }
  outcome$elapsed_seconds <- as.numeric(difftime(Sys.time(), t0, units = "secs"))
  outcome$warnings <- warnings
  outcome
}

run <- function(opts) {
  fname <- opts[["function"]]
  env <- new.env(parent = globalenv())
  setup <- capture(encode = FALSE, function() {
    sys.source(opts$file, envir = env, keep.source = TRUE)
    if (is.null(get0(fname, envir = env, mode = "function", inherits = FALSE))) {
      defined <- Filter(function(n) is.function(get(n, envir = env)), ls(env))
      stop(structure(class = c("FunctionNotFound", "runner_error", "error", "condition"), list(
        message = paste0(basename(opts$file), " defines no function `", fname, "` (it defines: ",
                         if (length(defined)) paste(defined, collapse = ", ") else "none", ")"),
        call = NULL)))
    }
    doc <- jsonlite::parse_json(readChar(opts$args, file.info(opts$args)$size, useBytes = TRUE),
                                simplifyVector = FALSE)
    chunk <- !is.null(doc[["calls"]])
    calls <- lapply(if (chunk) doc[["calls"]] else list(doc), function(call) {
      kwargs <- if (is.null(call[["kwargs"]])) list() else call[["kwargs"]]
      c(lapply(call[["args"]], simplify), lapply(kwargs, simplify))
    })
    list(calls = calls, chunk = chunk)
  })
  if (setup$status == "error") return(setup[setdiff(names(setup), "elapsed_seconds")])
  outcomes <- lapply(setup$value$calls, function(argv) {
    capture(function() do.call(fname, argv, envir = env))
  })
  if (!setup$value$chunk) return(outcomes[[1L]])
  list(status = "chunk", outcomes = outcomes)
}

main <- function(opts) {
  envelope <- run(opts)
  meta <- metadata()
  for (key in names(meta)) envelope[[key]] <- meta[[key]]
  text <- tryCatch(
    as.character(jsonlite::toJSON(envelope, auto_unbox = TRUE, digits = NA, null = "null",
                                  na = "null", json_verbatim = TRUE)),
    error = function(e) NULL
  )
  if (is.null(text)) {
    cat("run.R: could not encode the result envelope\n", file = stderr())
    return(EXIT_RUNNER_FAILED)
  }
  ok <- tryCatch({ write_atomic(text, opts$out); TRUE }, error = function(e) {
    cat("run.R: could not write ", opts$out, ": ", conditionMessage(e), "\n", sep = "",
        file = stderr())
    FALSE
  })
  if (!ok) return(EXIT_RUNNER_FAILED)
  items <- if (identical(envelope$status, "chunk")) envelope$outcomes else list(envelope)
  failed <- Filter(function(o) identical(o$status, "error"), items)
  cat("batchlaunch runner: ", length(items), " call(s), ", length(failed), " raised\n", sep = "")
  for (o in failed) cat(o$traceback, "\n", sep = "", file = stderr())
  0L
}

quit(save = "no", status = main(opts))
