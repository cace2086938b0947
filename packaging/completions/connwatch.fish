# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_connwatch_global_optspecs
    string join \n v/verbose q/quiet h/help V/version
end

function __fish_connwatch_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_connwatch_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_connwatch_using_subcommand
    set -l cmd (__fish_connwatch_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c connwatch -n "__fish_connwatch_needs_command" -s v -l verbose -d 'More log output (-v: info, -vv: debug, -vvv: trace). RUST_LOG overrides'
complete -c connwatch -n "__fish_connwatch_needs_command" -s q -l quiet -d 'Only errors in the log'
complete -c connwatch -n "__fish_connwatch_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c connwatch -n "__fish_connwatch_needs_command" -s V -l version -d 'Print version'
complete -c connwatch -n "__fish_connwatch_needs_command" -f -a "watch" -d 'Watch connections to one or more ports live and report per client address, with verdicts (leak, retry storm, limits …) and the first thing to do'
complete -c connwatch -n "__fish_connwatch_needs_command" -f -a "capture" -d 'Record the raw event stream to a file during an incident, to analyze later (here or elsewhere) with `connwatch analyze`'
complete -c connwatch -n "__fish_connwatch_needs_command" -f -a "analyze" -d 'Replay a capture file through the same pipeline as `watch`: the same counts, the same verdicts; as a table, NDJSON, or a self-contained HTML report'
complete -c connwatch -n "__fish_connwatch_needs_command" -f -a "check" -d 'The runbook\'s quick checks from a short live sample, without CLIENT LIST: exit 0 ok, 1 warning, 2 critical, 3 could not check'
complete -c connwatch -n "__fish_connwatch_needs_command" -f -a "completions" -d 'Print a shell completion script (packaging/completions/ has them generated)'
complete -c connwatch -n "__fish_connwatch_needs_command" -f -a "man" -d 'Print the man page (roff) to standard output'
complete -c connwatch -n "__fish_connwatch_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -s p -l port -d 'Local TCP port to watch (repeat for several). Default: 6379' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -s i -l interval -d 'Time between reports, e.g. 1s, 500ms, 1m' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l redis -d 'The Redis server to ask for INFO/CONFIG through one persistent connection: redis://[user@]host:port, rediss://[user@]host:port (TLS) or unix:///path/to/redis.sock. Default: redis://127.0.0.1:<first --port>. The password comes from --password-file or REDISCLI_AUTH, never from the URL' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l password-file -d 'Read the Redis password from this file (first line). Default: $REDISCLI_AUTH' -r -F
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l cacert -d 'CA certificates (PEM) that sign the server\'s certificate. Default: the system\'s CA store' -r -F
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l cert -d 'Client certificate (PEM) for a server with tls-auth-clients; with --key' -r -F
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l key -d 'The client certificate\'s private key (PEM)' -r -F
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l sni -d 'Server name to send (SNI) and to find in the server\'s certificate, instead of the URL\'s host' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l netns -d 'Watch only the Redis in this network namespace: a file such as /run/netns/NAME or /proc/PID/ns/net. Default: every namespace of the host, each reported as its own instance' -r -F
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l pid -d 'Watch only the Redis in the network namespace of this process (a host pid, e.g. from `docker inspect -f \'{{.State.Pid}}\'`)' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l remote-port -d 'Client mode, for an application host: watch this host\'s own connections to Redis servers on this remote port (repeat for several), per process and container, instead of a local Redis\'s. Needs no Redis password (INFO is not asked); reports say `role: client`' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l remote -d 'Client mode for one server: this host\'s connections to ADDR:PORT only (repeat for several; with --remote-port, those ports\' servers too)' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l window -d 'How far back trends (leaks, pools, fan-out) look' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l leak-min-growth -d 'Leak: growth of one address\'s open connections over the window' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l leak-idle -d 'Leak: a connection idle this long is stale' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l leak-min-stale -d 'Leak: at least this many stale connections' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l leak-slow-window -d 'Slow leak: growth judged over up to this long (from a thirtieth of it)' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l leak-slow-min-growth -d 'Slow leak: at least this much growth, in each third of the span' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l storm-min-failures -d 'Retry storm: at least this many failed attempts in the short window' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l storm-max-gap -d 'Retry storm: median gap between a failure and the next attempt below this' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l fleet-storm-min-addresses -d 'Retry storm across clients: at least this many addresses retrying without backoff…' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l fleet-storm-min-rate -d '…failing together at least this many times a second…' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l fleet-storm-window -d '…over this window' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l short-window -d 'How far back "happening now" looks (storms, rejections, accept failures)' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l fanout-min-addresses -d 'Instance fan-out: at least this many addresses with one or two short-lived connections' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l pool-min-instances -d 'Pool oversize: at least this many client addresses with similar steady pools…' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l pool-share -d '…holding together this share of the real limit' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l slow-consumer-min-bytes -d 'Slow consumer: at least this many bytes of replies an address has not taken…' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l slow-consumer-share -d '…and at least this share of all queued replies, for the short window' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l internal-reserve -d 'Slots to keep free for replicas, cluster bus and sentinels' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l internal -d 'An internal address or range (CIDR): Sentinels, replicas on other hosts, exporters, admin hosts. Never judged; counted in the internal headroom. Repeatable' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l budget -d 'A connection budget: at most N connections open from the range, e.g. 10.1.0.0/16=200 (budget_exceeded when passed). Repeatable' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l blocked-share -d 'Blocked clients holding this share of the limit' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l capacity-warning -d 'Capacity warning above this ratio of the real limit…' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l capacity-critical -d '…and critical from this ratio' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -s f -l format -d 'Output format. Default: text on a terminal, json otherwise' -r -f -a "text\t'A refreshing table, worst client first'
json\t'One NDJSON report object per interval (schema: docs/REPORT.md)'"
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -s d -l duration -d 'Stop after this long (e.g. 30s) and print a last report. Default: run until SIGINT/SIGTERM' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -s o -l output -d 'Write reports to this file instead of standard output (appends)' -r -F
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l top -d 'Show at most this many client addresses in the text view and as Prometheus series (the rest are summed as addr="other"); json is not limited (see --clients)' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l metrics -d 'Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9187. Give a loopback address unless the metrics must be reachable from other hosts' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l otlp -d 'Send the metrics (as --metrics serves them) and the verdict changes (as log records) to an OpenTelemetry collector over OTLP/HTTP with protobuf bodies: POSTs to URL/v1/metrics and URL/v1/logs each interval, e.g. http://127.0.0.1:4318. https:// trusts the host\'s CA store (SSL_CERT_FILE or SSL_CERT_DIR point it elsewhere)' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l otlp-queue -d 'With --otlp: how many requests may wait while the collector is unreachable; beyond it the oldest are dropped (counted in the report\'s otlp.dropped)' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l clients -d 'json: which client rows each report holds. changed: every row in the first report and every --full-every, and between them only the rows that changed (a counter moved, open connections, verdict, a new address) or carry a verdict other than healthy. all: every row in every report. Only json is trimmed: the text view, --metrics and HTML show the whole report' -r -f -a "changed\t'The changed rows; every row in the first report and every --full-every'
all\t'Every row in every report'"
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l full-every -d 'json with --clients changed: a report with every row this often (by uptime), so a reader can start anywhere in the stream' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l tls -d 'Connect to Redis over TLS (as a rediss:// URL does), e.g. to the default target or a redis:// URL'
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l insecure -d 'Do not verify the server\'s certificate (neither its CA nor its name)'
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l no-redis -d 'Do not connect to Redis at all: kernel and /proc figures only'
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l debug-probes -d 'Have the kernel programs log what they cannot handle (a record the ring buffer had no room for, an unknown address family or TCP state), at debug level as connwatch::kernel, shown without -v. Off, they log nothing and the kernel removes that code'
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l no-processes -d 'Do not find which process of this host opens each connection (clients on the Redis host: `processes` in the client rows). Off, a local client\'s connect costs the kernel program no more than any other transition. Client mode (--remote-port) always finds them: its opens are those records'
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -l stacks -d 'For a process called a leak, say where it opens its connections: the kernel takes the user stack of every connect() to a watched port (one map entry per call path), and the leak\'s evidence names the functions of its leaked connections (`stacks`). Native code built with frame pointers; for python, node or ruby the command line instead. Off, the kernel takes no stack'
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -s v -l verbose -d 'More log output (-v: info, -vv: debug, -vvv: trace). RUST_LOG overrides'
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -s q -l quiet -d 'Only errors in the log'
complete -c connwatch -n "__fish_connwatch_using_subcommand watch" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -s p -l port -d 'Local TCP port to watch (repeat for several). Default: 6379' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -s i -l interval -d 'Time between reports, e.g. 1s, 500ms, 1m' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l redis -d 'The Redis server to ask for INFO/CONFIG through one persistent connection: redis://[user@]host:port, rediss://[user@]host:port (TLS) or unix:///path/to/redis.sock. Default: redis://127.0.0.1:<first --port>. The password comes from --password-file or REDISCLI_AUTH, never from the URL' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l password-file -d 'Read the Redis password from this file (first line). Default: $REDISCLI_AUTH' -r -F
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l cacert -d 'CA certificates (PEM) that sign the server\'s certificate. Default: the system\'s CA store' -r -F
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l cert -d 'Client certificate (PEM) for a server with tls-auth-clients; with --key' -r -F
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l key -d 'The client certificate\'s private key (PEM)' -r -F
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l sni -d 'Server name to send (SNI) and to find in the server\'s certificate, instead of the URL\'s host' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l netns -d 'Watch only the Redis in this network namespace: a file such as /run/netns/NAME or /proc/PID/ns/net. Default: every namespace of the host, each reported as its own instance' -r -F
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l pid -d 'Watch only the Redis in the network namespace of this process (a host pid, e.g. from `docker inspect -f \'{{.State.Pid}}\'`)' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l remote-port -d 'Client mode, for an application host: watch this host\'s own connections to Redis servers on this remote port (repeat for several), per process and container, instead of a local Redis\'s. Needs no Redis password (INFO is not asked); reports say `role: client`' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l remote -d 'Client mode for one server: this host\'s connections to ADDR:PORT only (repeat for several; with --remote-port, those ports\' servers too)' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l window -d 'How far back trends (leaks, pools, fan-out) look' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l leak-min-growth -d 'Leak: growth of one address\'s open connections over the window' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l leak-idle -d 'Leak: a connection idle this long is stale' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l leak-min-stale -d 'Leak: at least this many stale connections' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l leak-slow-window -d 'Slow leak: growth judged over up to this long (from a thirtieth of it)' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l leak-slow-min-growth -d 'Slow leak: at least this much growth, in each third of the span' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l storm-min-failures -d 'Retry storm: at least this many failed attempts in the short window' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l storm-max-gap -d 'Retry storm: median gap between a failure and the next attempt below this' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l fleet-storm-min-addresses -d 'Retry storm across clients: at least this many addresses retrying without backoff…' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l fleet-storm-min-rate -d '…failing together at least this many times a second…' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l fleet-storm-window -d '…over this window' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l short-window -d 'How far back "happening now" looks (storms, rejections, accept failures)' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l fanout-min-addresses -d 'Instance fan-out: at least this many addresses with one or two short-lived connections' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l pool-min-instances -d 'Pool oversize: at least this many client addresses with similar steady pools…' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l pool-share -d '…holding together this share of the real limit' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l slow-consumer-min-bytes -d 'Slow consumer: at least this many bytes of replies an address has not taken…' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l slow-consumer-share -d '…and at least this share of all queued replies, for the short window' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l internal-reserve -d 'Slots to keep free for replicas, cluster bus and sentinels' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l internal -d 'An internal address or range (CIDR): Sentinels, replicas on other hosts, exporters, admin hosts. Never judged; counted in the internal headroom. Repeatable' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l budget -d 'A connection budget: at most N connections open from the range, e.g. 10.1.0.0/16=200 (budget_exceeded when passed). Repeatable' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l blocked-share -d 'Blocked clients holding this share of the limit' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l capacity-warning -d 'Capacity warning above this ratio of the real limit…' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l capacity-critical -d '…and critical from this ratio' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -s o -l output -d 'The capture file to create (mode 0600; never overwritten)' -r -F
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -s d -l duration -d 'Stop after this long, e.g. 5m. Default: until SIGINT/SIGTERM or --max-size' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l max-size -d 'Stop when the file reaches this size (compressed), e.g. 100M, 2G' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -s f -l format -d 'Format of the summary printed at the end. Default: text on a terminal, json otherwise' -r -f -a "text\t'A refreshing table, worst client first'
json\t'One NDJSON report object per interval (schema: docs/REPORT.md)'"
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l tls -d 'Connect to Redis over TLS (as a rediss:// URL does), e.g. to the default target or a redis:// URL'
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l insecure -d 'Do not verify the server\'s certificate (neither its CA nor its name)'
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l no-redis -d 'Do not connect to Redis at all: kernel and /proc figures only'
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l debug-probes -d 'Have the kernel programs log what they cannot handle (a record the ring buffer had no room for, an unknown address family or TCP state), at debug level as connwatch::kernel, shown without -v. Off, they log nothing and the kernel removes that code'
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l no-processes -d 'Do not find which process of this host opens each connection (clients on the Redis host: `processes` in the client rows). Off, a local client\'s connect costs the kernel program no more than any other transition. Client mode (--remote-port) always finds them: its opens are those records'
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l stacks -d 'For a process called a leak, say where it opens its connections: the kernel takes the user stack of every connect() to a watched port (one map entry per call path), and the leak\'s evidence names the functions of its leaked connections (`stacks`). Native code built with frame pointers; for python, node or ruby the command line instead. Off, the kernel takes no stack'
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -l redact -d 'Replace client addresses with stable pseudonyms (198.18.x.y, 2001:db8::n), so the file can be shared outside the team'
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -s v -l verbose -d 'More log output (-v: info, -vv: debug, -vvv: trace). RUST_LOG overrides'
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -s q -l quiet -d 'Only errors in the log'
complete -c connwatch -n "__fish_connwatch_using_subcommand capture" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -s f -l format -d 'text: the last report and every verdict seen; json: every interval\'s report as NDJSON (as `watch` writes it, --clients included); html: a self-contained report with charts' -r -f -a "text\t''
json\t''
html\t''"
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -s o -l output -d 'Write to this file instead of standard output' -r -F
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -l top -d 'Client addresses shown in the text view' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -l clients -d 'json: which client rows each report holds. changed: every row in the first report and every --full-every, and between them only the rows that changed (a counter moved, open connections, verdict, a new address) or carry a verdict other than healthy. all: every row in every report. Only json is trimmed: the text view, --metrics and HTML show the whole report' -r -f -a "changed\t'The changed rows; every row in the first report and every --full-every'
all\t'Every row in every report'"
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -l full-every -d 'json with --clients changed: a report with every row this often (by uptime), so a reader can start anywhere in the stream' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -l window -d 'How far back trends (leaks, pools, fan-out) look' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -l leak-min-growth -d 'Leak: growth of one address\'s open connections over the window' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -l leak-idle -d 'Leak: a connection idle this long is stale' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -l leak-min-stale -d 'Leak: at least this many stale connections' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -l leak-slow-window -d 'Slow leak: growth judged over up to this long (from a thirtieth of it)' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -l leak-slow-min-growth -d 'Slow leak: at least this much growth, in each third of the span' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -l storm-min-failures -d 'Retry storm: at least this many failed attempts in the short window' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -l storm-max-gap -d 'Retry storm: median gap between a failure and the next attempt below this' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -l fleet-storm-min-addresses -d 'Retry storm across clients: at least this many addresses retrying without backoff…' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -l fleet-storm-min-rate -d '…failing together at least this many times a second…' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -l fleet-storm-window -d '…over this window' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -l short-window -d 'How far back "happening now" looks (storms, rejections, accept failures)' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -l fanout-min-addresses -d 'Instance fan-out: at least this many addresses with one or two short-lived connections' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -l pool-min-instances -d 'Pool oversize: at least this many client addresses with similar steady pools…' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -l pool-share -d '…holding together this share of the real limit' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -l slow-consumer-min-bytes -d 'Slow consumer: at least this many bytes of replies an address has not taken…' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -l slow-consumer-share -d '…and at least this share of all queued replies, for the short window' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -l internal-reserve -d 'Slots to keep free for replicas, cluster bus and sentinels' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -l internal -d 'An internal address or range (CIDR): Sentinels, replicas on other hosts, exporters, admin hosts. Never judged; counted in the internal headroom. Repeatable' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -l budget -d 'A connection budget: at most N connections open from the range, e.g. 10.1.0.0/16=200 (budget_exceeded when passed). Repeatable' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -l blocked-share -d 'Blocked clients holding this share of the limit' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -l capacity-warning -d 'Capacity warning above this ratio of the real limit…' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -l capacity-critical -d '…and critical from this ratio' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -l redact -d 'Replace client addresses with stable pseudonyms in the output'
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -s v -l verbose -d 'More log output (-v: info, -vv: debug, -vvv: trace). RUST_LOG overrides'
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -s q -l quiet -d 'Only errors in the log'
complete -c connwatch -n "__fish_connwatch_using_subcommand analyze" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -s p -l port -d 'Local TCP port to watch (repeat for several). Default: 6379' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -s i -l interval -d 'Time between reports, e.g. 1s, 500ms, 1m' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l redis -d 'The Redis server to ask for INFO/CONFIG through one persistent connection: redis://[user@]host:port, rediss://[user@]host:port (TLS) or unix:///path/to/redis.sock. Default: redis://127.0.0.1:<first --port>. The password comes from --password-file or REDISCLI_AUTH, never from the URL' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l password-file -d 'Read the Redis password from this file (first line). Default: $REDISCLI_AUTH' -r -F
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l cacert -d 'CA certificates (PEM) that sign the server\'s certificate. Default: the system\'s CA store' -r -F
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l cert -d 'Client certificate (PEM) for a server with tls-auth-clients; with --key' -r -F
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l key -d 'The client certificate\'s private key (PEM)' -r -F
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l sni -d 'Server name to send (SNI) and to find in the server\'s certificate, instead of the URL\'s host' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l netns -d 'Watch only the Redis in this network namespace: a file such as /run/netns/NAME or /proc/PID/ns/net. Default: every namespace of the host, each reported as its own instance' -r -F
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l pid -d 'Watch only the Redis in the network namespace of this process (a host pid, e.g. from `docker inspect -f \'{{.State.Pid}}\'`)' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l remote-port -d 'Client mode, for an application host: watch this host\'s own connections to Redis servers on this remote port (repeat for several), per process and container, instead of a local Redis\'s. Needs no Redis password (INFO is not asked); reports say `role: client`' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l remote -d 'Client mode for one server: this host\'s connections to ADDR:PORT only (repeat for several; with --remote-port, those ports\' servers too)' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l window -d 'How far back trends (leaks, pools, fan-out) look' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l leak-min-growth -d 'Leak: growth of one address\'s open connections over the window' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l leak-idle -d 'Leak: a connection idle this long is stale' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l leak-min-stale -d 'Leak: at least this many stale connections' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l leak-slow-window -d 'Slow leak: growth judged over up to this long (from a thirtieth of it)' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l leak-slow-min-growth -d 'Slow leak: at least this much growth, in each third of the span' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l storm-min-failures -d 'Retry storm: at least this many failed attempts in the short window' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l storm-max-gap -d 'Retry storm: median gap between a failure and the next attempt below this' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l fleet-storm-min-addresses -d 'Retry storm across clients: at least this many addresses retrying without backoff…' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l fleet-storm-min-rate -d '…failing together at least this many times a second…' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l fleet-storm-window -d '…over this window' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l short-window -d 'How far back "happening now" looks (storms, rejections, accept failures)' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l fanout-min-addresses -d 'Instance fan-out: at least this many addresses with one or two short-lived connections' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l pool-min-instances -d 'Pool oversize: at least this many client addresses with similar steady pools…' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l pool-share -d '…holding together this share of the real limit' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l slow-consumer-min-bytes -d 'Slow consumer: at least this many bytes of replies an address has not taken…' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l slow-consumer-share -d '…and at least this share of all queued replies, for the short window' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l internal-reserve -d 'Slots to keep free for replicas, cluster bus and sentinels' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l internal -d 'An internal address or range (CIDR): Sentinels, replicas on other hosts, exporters, admin hosts. Never judged; counted in the internal headroom. Repeatable' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l budget -d 'A connection budget: at most N connections open from the range, e.g. 10.1.0.0/16=200 (budget_exceeded when passed). Repeatable' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l blocked-share -d 'Blocked clients holding this share of the limit' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l capacity-warning -d 'Capacity warning above this ratio of the real limit…' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l capacity-critical -d '…and critical from this ratio' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l sample -d 'How long to sample before judging' -r
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -s f -l format -d 'Output format. Default: text on a terminal, json otherwise' -r -f -a "text\t'A refreshing table, worst client first'
json\t'One NDJSON report object per interval (schema: docs/REPORT.md)'"
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l tls -d 'Connect to Redis over TLS (as a rediss:// URL does), e.g. to the default target or a redis:// URL'
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l insecure -d 'Do not verify the server\'s certificate (neither its CA nor its name)'
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l no-redis -d 'Do not connect to Redis at all: kernel and /proc figures only'
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l debug-probes -d 'Have the kernel programs log what they cannot handle (a record the ring buffer had no room for, an unknown address family or TCP state), at debug level as connwatch::kernel, shown without -v. Off, they log nothing and the kernel removes that code'
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l no-processes -d 'Do not find which process of this host opens each connection (clients on the Redis host: `processes` in the client rows). Off, a local client\'s connect costs the kernel program no more than any other transition. Client mode (--remote-port) always finds them: its opens are those records'
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -l stacks -d 'For a process called a leak, say where it opens its connections: the kernel takes the user stack of every connect() to a watched port (one map entry per call path), and the leak\'s evidence names the functions of its leaked connections (`stacks`). Native code built with frame pointers; for python, node or ruby the command line instead. Off, the kernel takes no stack'
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -s v -l verbose -d 'More log output (-v: info, -vv: debug, -vvv: trace). RUST_LOG overrides'
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -s q -l quiet -d 'Only errors in the log'
complete -c connwatch -n "__fish_connwatch_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c connwatch -n "__fish_connwatch_using_subcommand completions" -s v -l verbose -d 'More log output (-v: info, -vv: debug, -vvv: trace). RUST_LOG overrides'
complete -c connwatch -n "__fish_connwatch_using_subcommand completions" -s q -l quiet -d 'Only errors in the log'
complete -c connwatch -n "__fish_connwatch_using_subcommand completions" -s h -l help -d 'Print help'
complete -c connwatch -n "__fish_connwatch_using_subcommand man" -s v -l verbose -d 'More log output (-v: info, -vv: debug, -vvv: trace). RUST_LOG overrides'
complete -c connwatch -n "__fish_connwatch_using_subcommand man" -s q -l quiet -d 'Only errors in the log'
complete -c connwatch -n "__fish_connwatch_using_subcommand man" -s h -l help -d 'Print help'
complete -c connwatch -n "__fish_connwatch_using_subcommand help; and not __fish_seen_subcommand_from watch capture analyze check completions man help" -f -a "watch" -d 'Watch connections to one or more ports live and report per client address, with verdicts (leak, retry storm, limits …) and the first thing to do'
complete -c connwatch -n "__fish_connwatch_using_subcommand help; and not __fish_seen_subcommand_from watch capture analyze check completions man help" -f -a "capture" -d 'Record the raw event stream to a file during an incident, to analyze later (here or elsewhere) with `connwatch analyze`'
complete -c connwatch -n "__fish_connwatch_using_subcommand help; and not __fish_seen_subcommand_from watch capture analyze check completions man help" -f -a "analyze" -d 'Replay a capture file through the same pipeline as `watch`: the same counts, the same verdicts; as a table, NDJSON, or a self-contained HTML report'
complete -c connwatch -n "__fish_connwatch_using_subcommand help; and not __fish_seen_subcommand_from watch capture analyze check completions man help" -f -a "check" -d 'The runbook\'s quick checks from a short live sample, without CLIENT LIST: exit 0 ok, 1 warning, 2 critical, 3 could not check'
complete -c connwatch -n "__fish_connwatch_using_subcommand help; and not __fish_seen_subcommand_from watch capture analyze check completions man help" -f -a "completions" -d 'Print a shell completion script (packaging/completions/ has them generated)'
complete -c connwatch -n "__fish_connwatch_using_subcommand help; and not __fish_seen_subcommand_from watch capture analyze check completions man help" -f -a "man" -d 'Print the man page (roff) to standard output'
complete -c connwatch -n "__fish_connwatch_using_subcommand help; and not __fish_seen_subcommand_from watch capture analyze check completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
