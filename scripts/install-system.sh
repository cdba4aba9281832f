#!/usr/bin/env bash
# Installs the Debian packages attnvision uses, when we are root on a Debian-like system:
# - dataset-fashion-mnist: the default data (elsewhere attnvision downloads it, MD5-checked, or
#   reads --data-dir / $ATTNVISION_DATA);
# - chromium, chromium-driver: the headless browser the report's test opens report.html in
#   (elsewhere that test is skipped, saying why).
set -u
want=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || want+=(dataset-fashion-mnist)
command -v chromium >/dev/null 2>&1 || want+=(chromium)
command -v chromedriver >/dev/null 2>&1 || want+=(chromium-driver)
[ ${#want[@]} = 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get install -y -qq "${want[@]}" >/dev/null 2>&1 ||
   { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "${want[@]}" >/dev/null 2>&1; }) ||
    echo "note: could not install ${want[*]} with apt; Fashion-MNIST will be downloaded on first use and the browser test skipped"
else
  echo "note: not root or no apt, so ${want[*]} not installed: Fashion-MNIST will be downloaded on first use (or set ATTNVISION_DATA) and the browser test skipped"
fi
exit 0
