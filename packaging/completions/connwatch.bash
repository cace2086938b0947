_connwatch() {
    local i cur prev opts cmd
    COMPREPLY=()
    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
        cur="$2"
    else
        cur="${COMP_WORDS[COMP_CWORD]}"
    fi
    prev="$3"
    cmd=""
    opts=""

    for i in "${COMP_WORDS[@]:0:COMP_CWORD}"
    do
        case "${cmd},${i}" in
            ",$1")
                cmd="connwatch"
                ;;
            connwatch,analyze)
                cmd="connwatch__subcmd__analyze"
                ;;
            connwatch,capture)
                cmd="connwatch__subcmd__capture"
                ;;
            connwatch,check)
                cmd="connwatch__subcmd__check"
                ;;
            connwatch,completions)
                cmd="connwatch__subcmd__completions"
                ;;
            connwatch,help)
                cmd="connwatch__subcmd__help"
                ;;
            connwatch,man)
                cmd="connwatch__subcmd__man"
                ;;
            connwatch,watch)
                cmd="connwatch__subcmd__watch"
                ;;
            connwatch__subcmd__help,analyze)
                cmd="connwatch__subcmd__help__subcmd__analyze"
                ;;
            connwatch__subcmd__help,capture)
                cmd="connwatch__subcmd__help__subcmd__capture"
                ;;
            connwatch__subcmd__help,check)
                cmd="connwatch__subcmd__help__subcmd__check"
                ;;
            connwatch__subcmd__help,completions)
                cmd="connwatch__subcmd__help__subcmd__completions"
                ;;
            connwatch__subcmd__help,help)
                cmd="connwatch__subcmd__help__subcmd__help"
                ;;
            connwatch__subcmd__help,man)
                cmd="connwatch__subcmd__help__subcmd__man"
                ;;
            connwatch__subcmd__help,watch)
                cmd="connwatch__subcmd__help__subcmd__watch"
                ;;
            *)
                ;;
        esac
    done

    case "${cmd}" in
        connwatch)
            opts="-v -q -h -V --verbose --quiet --help --version watch capture analyze check completions man help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 1 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        connwatch__subcmd__analyze)
            opts="-f -o -v -q -h --format --output --redact --top --clients --full-every --window --leak-min-growth --leak-idle --leak-min-stale --leak-slow-window --leak-slow-min-growth --storm-min-failures --storm-max-gap --fleet-storm-min-addresses --fleet-storm-min-rate --fleet-storm-window --short-window --fanout-min-addresses --pool-min-instances --pool-share --slow-consumer-min-bytes --slow-consumer-share --internal-reserve --internal --budget --blocked-share --capacity-warning --capacity-critical --verbose --quiet --help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --format)
                    COMPREPLY=($(compgen -W "text json html" -- "${cur}"))
                    return 0
                    ;;
                -f)
                    COMPREPLY=($(compgen -W "text json html" -- "${cur}"))
                    return 0
                    ;;
                --output)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -o)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --top)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --clients)
                    COMPREPLY=($(compgen -W "changed all" -- "${cur}"))
                    return 0
                    ;;
                --full-every)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --window)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --leak-min-growth)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --leak-idle)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --leak-min-stale)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --leak-slow-window)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --leak-slow-min-growth)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --storm-min-failures)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --storm-max-gap)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --fleet-storm-min-addresses)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --fleet-storm-min-rate)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --fleet-storm-window)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --short-window)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --fanout-min-addresses)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --pool-min-instances)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --pool-share)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --slow-consumer-min-bytes)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --slow-consumer-share)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --internal-reserve)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --internal)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --budget)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --blocked-share)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --capacity-warning)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --capacity-critical)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        connwatch__subcmd__capture)
            opts="-p -i -o -d -f -v -q -h --port --interval --redis --password-file --tls --cacert --cert --key --insecure --sni --no-redis --netns --pid --debug-probes --no-processes --stacks --remote-port --remote --window --leak-min-growth --leak-idle --leak-min-stale --leak-slow-window --leak-slow-min-growth --storm-min-failures --storm-max-gap --fleet-storm-min-addresses --fleet-storm-min-rate --fleet-storm-window --short-window --fanout-min-addresses --pool-min-instances --pool-share --slow-consumer-min-bytes --slow-consumer-share --internal-reserve --internal --budget --blocked-share --capacity-warning --capacity-critical --output --duration --max-size --redact --format --verbose --quiet --help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --port)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -p)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --interval)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -i)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --redis)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --password-file)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --cacert)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --cert)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --key)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --sni)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --netns)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --pid)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --remote-port)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --remote)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --window)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --leak-min-growth)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --leak-idle)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --leak-min-stale)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --leak-slow-window)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --leak-slow-min-growth)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --storm-min-failures)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --storm-max-gap)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --fleet-storm-min-addresses)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --fleet-storm-min-rate)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --fleet-storm-window)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --short-window)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --fanout-min-addresses)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --pool-min-instances)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --pool-share)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --slow-consumer-min-bytes)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --slow-consumer-share)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --internal-reserve)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --internal)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --budget)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --blocked-share)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --capacity-warning)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --capacity-critical)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --output)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -o)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --duration)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -d)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --max-size)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --format)
                    COMPREPLY=($(compgen -W "text json" -- "${cur}"))
                    return 0
                    ;;
                -f)
                    COMPREPLY=($(compgen -W "text json" -- "${cur}"))
                    return 0
                    ;;
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        connwatch__subcmd__check)
            opts="-p -i -f -v -q -h --port --interval --redis --password-file --tls --cacert --cert --key --insecure --sni --no-redis --netns --pid --debug-probes --no-processes --stacks --remote-port --remote --window --leak-min-growth --leak-idle --leak-min-stale --leak-slow-window --leak-slow-min-growth --storm-min-failures --storm-max-gap --fleet-storm-min-addresses --fleet-storm-min-rate --fleet-storm-window --short-window --fanout-min-addresses --pool-min-instances --pool-share --slow-consumer-min-bytes --slow-consumer-share --internal-reserve --internal --budget --blocked-share --capacity-warning --capacity-critical --sample --format --verbose --quiet --help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --port)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -p)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --interval)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -i)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --redis)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --password-file)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --cacert)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --cert)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --key)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --sni)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --netns)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --pid)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --remote-port)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --remote)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --window)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --leak-min-growth)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --leak-idle)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --leak-min-stale)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --leak-slow-window)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --leak-slow-min-growth)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --storm-min-failures)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --storm-max-gap)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --fleet-storm-min-addresses)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --fleet-storm-min-rate)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --fleet-storm-window)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --short-window)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --fanout-min-addresses)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --pool-min-instances)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --pool-share)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --slow-consumer-min-bytes)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --slow-consumer-share)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --internal-reserve)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --internal)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --budget)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --blocked-share)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --capacity-warning)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --capacity-critical)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --sample)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --format)
                    COMPREPLY=($(compgen -W "text json" -- "${cur}"))
                    return 0
                    ;;
                -f)
                    COMPREPLY=($(compgen -W "text json" -- "${cur}"))
                    return 0
                    ;;
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        connwatch__subcmd__completions)
            opts="-v -q -h --verbose --quiet --help bash elvish fish powershell zsh"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        connwatch__subcmd__help)
            opts="watch capture analyze check completions man help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        connwatch__subcmd__help__subcmd__analyze)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        connwatch__subcmd__help__subcmd__capture)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        connwatch__subcmd__help__subcmd__check)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        connwatch__subcmd__help__subcmd__completions)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        connwatch__subcmd__help__subcmd__help)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        connwatch__subcmd__help__subcmd__man)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        connwatch__subcmd__help__subcmd__watch)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        connwatch__subcmd__man)
            opts="-v -q -h --verbose --quiet --help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        connwatch__subcmd__watch)
            opts="-p -i -f -d -o -v -q -h --port --interval --redis --password-file --tls --cacert --cert --key --insecure --sni --no-redis --netns --pid --debug-probes --no-processes --stacks --remote-port --remote --window --leak-min-growth --leak-idle --leak-min-stale --leak-slow-window --leak-slow-min-growth --storm-min-failures --storm-max-gap --fleet-storm-min-addresses --fleet-storm-min-rate --fleet-storm-window --short-window --fanout-min-addresses --pool-min-instances --pool-share --slow-consumer-min-bytes --slow-consumer-share --internal-reserve --internal --budget --blocked-share --capacity-warning --capacity-critical --format --duration --output --top --metrics --otlp --otlp-queue --clients --full-every --verbose --quiet --help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --port)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -p)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --interval)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -i)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --redis)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --password-file)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --cacert)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --cert)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --key)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --sni)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --netns)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --pid)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --remote-port)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --remote)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --window)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --leak-min-growth)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --leak-idle)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --leak-min-stale)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --leak-slow-window)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --leak-slow-min-growth)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --storm-min-failures)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --storm-max-gap)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --fleet-storm-min-addresses)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --fleet-storm-min-rate)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --fleet-storm-window)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --short-window)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --fanout-min-addresses)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --pool-min-instances)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --pool-share)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --slow-consumer-min-bytes)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --slow-consumer-share)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --internal-reserve)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --internal)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --budget)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --blocked-share)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --capacity-warning)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --capacity-critical)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --format)
                    COMPREPLY=($(compgen -W "text json" -- "${cur}"))
                    return 0
                    ;;
                -f)
                    COMPREPLY=($(compgen -W "text json" -- "${cur}"))
                    return 0
                    ;;
                --duration)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -d)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --output)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -o)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --top)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --metrics)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --otlp)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --otlp-queue)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --clients)
                    COMPREPLY=($(compgen -W "changed all" -- "${cur}"))
                    return 0
                    ;;
                --full-every)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
    esac
}

if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _connwatch -o nosort -o bashdefault -o default connwatch
else
    complete -F _connwatch -o bashdefault -o default connwatch
fi
