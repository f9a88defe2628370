#!/usr/bin/env bash
# A throwaway certificate authority and server certificate for TLS tests (never for
# production); it owns the files it writes into DIR and nothing else.
#
#   scripts/test-ca.sh DIR [NAME...]
#
# Writes, once (idempotent: files already there are kept, so runs and tests can share them):
#   DIR/ca.pem        the CA certificate (trust it: curl --cacert, NODE_EXTRA_CA_CERTS,
#                     ssl.create_default_context(cafile=...), ClientTls::with_roots_file)
#   DIR/ca.key        its key
#   DIR/server.pem    a server certificate signed by the CA, for NAMEs (default: localhost
#                     127.0.0.1 ::1), valid 30 days, with the CA appended (a full chain)
#   DIR/server.key    its key (PKCS#8)
# A server certificate whose names differ from NAMEs, or that expires within a day, is made
# again (the CA is kept). Prints the directory. Needs openssl (Debian's package).
set -euo pipefail

dir=${1:?usage: scripts/test-ca.sh DIR [NAME...]}
shift
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(localhost 127.0.0.1 ::1)
command -v openssl >/dev/null || { echo "test-ca.sh: openssl not found (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$dir"
umask 077

san=""
for n in "${names[@]}"; do
    if [[ $n =~ ^[0-9.]+$ || $n == *:* ]]; then san+="IP:$n,"; else san+="DNS:$n,"; fi
done
san=${san%,}

if [ ! -s "$dir/ca.pem" ] || [ ! -s "$dir/ca.key" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$dir/ca.key" -out "$dir/ca.pem" -days 3650 -subj "/CN=Sockeye test CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    rm -f "$dir/server.pem" "$dir/server.key"
fi

fresh() {
    [ -s "$dir/server.pem" ] && [ -s "$dir/server.key" ] || return 1
    openssl x509 -in "$dir/server.pem" -noout -checkend 86400 >/dev/null || return 1
    [ "$(cat "$dir/server.san" 2>/dev/null)" = "$san" ]
}

if ! fresh; then
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$dir/server.key.tmp" -out "$dir/server.csr" -subj "/CN=${names[0]}" 2>/dev/null
    openssl pkcs8 -topk8 -nocrypt -in "$dir/server.key.tmp" -out "$dir/server.key.pk8"
    printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
        "$san" > "$dir/server.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 30 -extfile "$dir/server.ext" -out "$dir/server.crt" 2>/dev/null
    cat "$dir/server.crt" "$dir/ca.pem" > "$dir/server.pem.tmp"
    mv "$dir/server.key.pk8" "$dir/server.key"
    mv "$dir/server.pem.tmp" "$dir/server.pem"
    printf '%s' "$san" > "$dir/server.san"
    rm -f "$dir/server.key.tmp" "$dir/server.csr" "$dir/server.ext" "$dir/server.crt" "$dir/ca.srl"
fi
chmod 644 "$dir/ca.pem" "$dir/server.pem"
echo "$dir"
