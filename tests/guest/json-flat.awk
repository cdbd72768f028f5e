# kiln test guest: run as "awk -f json-flat.awk" (through /bin/json-flat).
# kiln test guest: prints each scalar of a JSON document as path=value, path segments joined by
# '.', array members by index (links.0.id=tap1). Enough for the config drive's network_data.json
# and meta_data.json, with no JSON parser in busybox. A tokenizer, not a validator: escaped
# characters inside strings are kept as written.
BEGIN { RS = "\001" }

function emit(v,    p, d) {
    p = ""
    for (d = 1; d <= depth; d++) p = p (d > 1 ? "." : "") key[d]
    print p "=" v
}

{
    s = $0; n = length(s); i = 1; depth = 0
    while (i <= n) {
        c = substr(s, i, 1)
        if (c == "{") { depth++; type[depth] = "o"; key[depth] = ""; i++; continue }
        if (c == "[") { depth++; type[depth] = "a"; idx[depth] = 0; key[depth] = "0"; i++; continue }
        if (c == "}" || c == "]") { depth--; i++; continue }
        if (c == ",") {
            if (type[depth] == "a") { idx[depth]++; key[depth] = idx[depth] }
            i++; continue
        }
        if (c == "\"") {
            j = i + 1; str = ""
            while (j <= n) {
                d = substr(s, j, 1)
                if (d == "\\") { str = str substr(s, j, 2); j += 2; continue }
                if (d == "\"") break
                str = str d; j++
            }
            i = j + 1
            k = i
            while (substr(s, k, 1) ~ /[ \t\r\n]/) k++
            if (type[depth] == "o" && substr(s, k, 1) == ":") { key[depth] = str; i = k + 1; continue }
            emit(str); continue
        }
        if (c ~ /[-0-9a-z]/) {
            j = i
            while (substr(s, j, 1) ~ /[-+.0-9a-zA-Z]/) j++
            emit(substr(s, i, j - i)); i = j; continue
        }
        i++
    }
}
