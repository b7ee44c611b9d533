#!/usr/bin/env julia
# batchlaunch's node-side runner for Julia functions (shipped to nodes as a resource file).
#
#   julia --startup-file=no run.jl --file model.jl --function simulate --args args.json --out result.json
#
# args.json is {"args": [...], "kwargs": {...}} (kwargs become keyword arguments), or
# {"calls": [{"args": [...], "kwargs": {...}}, ...]} for a chunk of calls. The file is
# included into its own module, the function called with Base.invokelatest, and
# result.json written atomically (temp file + mv) in the working directory, in the same
# envelope as run.R:
#
#   {"status": "ok", "value": ..., "runner": "run.jl", "language": "julia", "version": "1.10.4",
#    "host": ..., "started": ..., "finished": ..., "elapsed_seconds": ..., "warnings": []}
#   {"status": "error", "type": "DomainError", "message": "...", "traceback": "...", ...}
#   {"status": "chunk", "outcomes": [{"status": "ok", "value": ...}, {"status": "error", ...}]}
#
# A top-level "error" means nothing ran (file, function or arguments could not be loaded).
# Floats are written in their shortest round-trip form; NaN and infinities become null.
# Needs JSON3 (installed by the runtime's start task); without it an error envelope is
# written by hand.
#
# Exit codes: 0 result.json written (the function may still have raised); 2 bad command
# line; 70 result.json could not be written; anything else: Julia itself died (no result).

using Dates

const RUNNER = "run.jl"
const EXIT_USAGE = 2
const EXIT_RUNNER_FAILED = 70
const STARTED = time()

function usage(problem)
    println(stderr, "run.jl: ", problem, "\nusage: julia run.jl --file FILE.jl --function NAME ",
            "--args ARGS.json --out RESULT.json")
    exit(EXIT_USAGE)
end

function parse_cli(argv)
    opts = Dict{String,String}()
    i = 1
    while i <= length(argv)
        key = argv[i]
        (startswith(key, "--") && i < length(argv)) || usage("unexpected argument $key")
        opts[key[3:end]] = argv[i + 1]
        i += 2
    end
    for key in ("file", "function", "args", "out")
        haskey(opts, key) || usage("missing --$key")
    end
    return opts
end

iso_utc(t) = Dates.format(Dates.unix2datetime(t), "yyyy-mm-ddTHH:MM:SS.sss") * "Z"

function write_atomic(text::AbstractString, path::AbstractString)
    tmp, io = mktemp(dirname(abspath(path)))
    try
        write(io, text)
        flush(io)
    finally
        close(io)
    end
    mv(tmp, path; force = true)
end

function metadata()
    finished = time()
    return Dict{String,Any}(
        "runner" => RUNNER,
        "language" => "julia",
        "version" => string(VERSION),
        "host" => gethostname(),
        "started" => iso_utc(STARTED),
        "finished" => iso_utc(finished),
        "elapsed_seconds" => finished - STARTED,
    )
end

const opts = parse_cli(ARGS)

const HAVE_JSON3 = try
    @eval using JSON3
    true
catch
    false
end

if !HAVE_JSON3
    # Without JSON3 nothing else works: write the error envelope by hand.
    quote_json(s) = "\"" * replace(string(s), "\\" => "\\\\", "\"" => "\\\"", "\n" => "\\n") * "\""
    fields = merge(metadata(), Dict{String,Any}(
        "status" => "error",
        "type" => "MissingPackage",
        "message" => "the Julia package JSON3 is not installed on this node; add it to [runtime] packages",
        "traceback" => "",
    ))
    write_atomic("{" * join([quote_json(k) * ":" * quote_json(v) for (k, v) in fields], ",") * "}",
                 opts["out"])
    exit(0)
end

struct FunctionNotFound <: Exception
    msg::String
end
Base.showerror(io::IO, e::FunctionNotFound) = print(io, e.msg)

struct SerializationError <: Exception
    msg::String
end
Base.showerror(io::IO, e::SerializationError) = print(io, e.msg)

# JSON3's lazy views -> plain Dicts and Vectors (arrays get the narrowest element type).
plain(x) = x
plain(x::JSON3.Object) = Dict{String,Any}(String(k) => plain(v) for (k, v) in pairs(x))
plain(x::JSON3.Array) = isempty(x) ? Any[] : [plain(v) for v in x]

# Values -> what JSON3 writes as the shared envelope expects (non-finite floats -> null).
jsonable(x) = x
jsonable(x::AbstractFloat) = isfinite(x) ? x : nothing
jsonable(x::Union{AbstractArray,Tuple}) = Any[jsonable(v) for v in x]
jsonable(x::AbstractDict) = Dict{String,Any}(string(k) => jsonable(v) for (k, v) in x)
jsonable(x::NamedTuple) = Dict{String,Any}(string(k) => jsonable(v) for (k, v) in pairs(x))
jsonable(x::Symbol) = string(x)

type_chain(T) = T === Any ? String[] : [string(nameof(T)); type_chain(supertype(T))]

# The user's frames: everything before the first frame of this file.
function user_traceback(err, bt)
    frames = stacktrace(bt)
    cut = findfirst(f -> basename(string(f.file)) == RUNNER, frames)
    kept = cut === nothing ? frames : frames[1:cut-1]
    kept = filter(f -> !occursin("invokelatest", string(f.func)), kept)
    lines = ["Error: " * sprint(showerror, err)]
    if !isempty(kept)
        push!(lines, "Stacktrace (innermost first):")
        append!(lines, [" [$(i)] $(f)" for (i, f) in enumerate(kept)])
    end
    return join(lines, "\n")
end

function capture(thunk; encode::Bool = true)
    t0 = time()
    outcome = try
        value = thunk()
        if encode
            JSON3.write(jsonable(value))  # fail here, for this call only, if it has no JSON form
            value = jsonable(value)
        end
        Dict{String,Any}("status" => "ok", "value" => value)
    catch err
        if err isa InterruptException
            rethrow()
        end
        bt = catch_backtrace()
        if encode && err isa ArgumentError && occursin("StructType", sprint(showerror, err))
            err = SerializationError("the function returned a value with no JSON form: " *
                                     sprint(showerror, err))
        end
        Dict{String,Any}(
            "status" => "error",
            "type" => string(nameof(typeof(err))),
            "classes" => type_chain(typeof(err)),
            "message" => sprint(showerror, err),
            "traceback" => err isa FunctionNotFound ? "Error: " * err.msg : user_traceback(err, bt),
        )
    end
    outcome["elapsed_seconds"] = time() - t0
    outcome["warnings"] = String[]
    return outcome
end

function load(opts)
    name = Symbol(opts["function"])
    mod = Core.eval(Main, :(module BatchlaunchUser end))
    Base.include(mod, abspath(opts["file"]))
    if !isdefined(mod, name)
        defined = [string(n) for n in names(mod; all = true)
                   if !startswith(string(n), "#") && n !== nameof(mod) &&
                      getfield(mod, n) isa Function && !(n in (:eval, :include))]
        throw(FunctionNotFound("$(basename(opts["file"])) defines no function `$(name)` " *
                               "(it defines: $(isempty(defined) ? "none" : join(defined, ", ")))"))
    end
    fn = getfield(mod, name)
    doc = plain(JSON3.read(read(opts["args"], String)))
    chunk = haskey(doc, "calls")
    calls = [(Any[a for a in get(c, "args", Any[])],
              [Symbol(k) => v for (k, v) in get(c, "kwargs", Dict{String,Any}())])
             for c in (chunk ? doc["calls"] : [doc])]
    return (fn = fn, calls = calls, chunk = chunk)
end

function run(opts)
    setup = capture(() -> load(opts), encode = false)
    if setup["status"] == "error"
        delete!(setup, "elapsed_seconds")
        return setup
    end
    fn, calls, chunk = setup["value"]
    outcomes = [capture(() -> Base.invokelatest(fn, args...; kwargs...)) for (args, kwargs) in calls]
    chunk || return outcomes[1]
    return Dict{String,Any}("status" => "chunk", "outcomes" => outcomes)
end

function main(opts)
    envelope = merge(run(opts), metadata())
    try
        write_atomic(JSON3.write(envelope), opts["out"])
    catch err
        println(stderr, "run.jl: could not write ", opts["out"], ": ", sprint(showerror, err))
        return EXIT_RUNNER_FAILED
    end
    items = envelope["status"] == "chunk" ? envelope["outcomes"] : [envelope]
    failed = filter(o -> o["status"] == "error", items)
    println("batchlaunch runner: ", length(items), " call(s), ", length(failed), " raised")
    foreach(o -> println(stderr, o["traceback"]), failed)
    return 0
end

exit(main(opts))
