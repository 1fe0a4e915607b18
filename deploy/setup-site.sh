#!/usr/bin/env bash
# Lay out a site directory as deploy/README.md describes, from the example site:
#   ETC/site.yaml, ETC/plant.yaml      the example site (recipes referred to as recipes/...)
#   ETC/recipes/*.yaml, recipes/models  every shipped recipe and the models they name
#   ETC/pki/hmi_server_{cert,key}.pem   the HMI server's certificate (apc hmi-cert)
#   ETC/pki/trusted/                    the trust list: the HMI clients allowed to connect
#   ETC/hmi_users.yaml                  accounts olga (operator) and erin (engineer) (apc hmi-user)
#   ETC/clients/erin.yaml               erin's credentials file for apc status / apc mode (mode 0600),
#                                       with her client certificate, which is put on the trust list
# usage: deploy/setup-site.sh ETC [VAR]   (VAR: records and state, default /var/lib/apc)
# Passwords: $APC_OPERATOR_PASSWORD and $APC_ENGINEER_PASSWORD, else asked on the terminal.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
etc="${1:?usage: deploy/setup-site.sh ETC [VAR]}"
var="${2:-/var/lib/apc}"
apc="${APC:-apc}"
umask 077
mkdir -p "$etc/recipes/models" "$etc/bindings" "$etc/pki/trusted" "$etc/clients" "$var"
install -m 0640 "$repo"/recipes/*.yaml "$etc/recipes/"
install -m 0640 "$repo"/recipes/models/*.onnx "$etc/recipes/models/"
sed -e "s#\.\./\.\./recipes/#recipes/#" -e "s#/var/lib/apc#$var#g" "$here/example-site/site.yaml" > "$etc/site.yaml"
install -m 0640 "$here/example-site/plant.yaml" "$etc/plant.yaml"
"$apc" hmi-cert --out "$etc/pki" --uri urn:example-smelter:apc:hmi --host localhost --host 127.0.0.1 --host "$(hostname)"
ask() {  # ask NAME: a password from the environment variable NAME, else from the terminal
  local value="${!1:-}"
  if [ -z "$value" ]; then read -r -s -p "password for ${2}: " value; echo >&2; fi
  printf '%s\n' "$value"
}
ask APC_OPERATOR_PASSWORD olga | "$apc" hmi-user --users "$etc/hmi_users.yaml" --name olga --role operator
erin_password="$(ask APC_ENGINEER_PASSWORD erin)"
printf '%s\n' "$erin_password" | "$apc" hmi-user --users "$etc/hmi_users.yaml" --name erin --role engineer
"$apc" hmi-cert --out "$etc/clients" --name erin --uri urn:example-smelter:apc:erin --host localhost
install -m 0644 "$etc/clients/erin_cert.pem" "$etc/pki/trusted/erin_cert.pem"
cat > "$etc/clients/erin.yaml" <<CREDS
username: erin
password: "$erin_password"
client_cert: erin_cert.pem
client_key: erin_key.pem
server_cert: ../pki/hmi_server_cert.pem
CREDS
chmod 0600 "$etc/clients/erin.yaml"
echo "site laid out in $etc (records and state in $var); next:"
echo "  $apc check $etc/site.yaml $etc/plant.yaml"
echo "  $apc plant-sim $etc/site.yaml --bindings-out $etc/bindings     # only to try it without a plant"
echo "  $apc run $etc/site.yaml"
