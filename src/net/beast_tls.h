// Asio's and Beast's TLS (OpenSSL) for parley_net, precompiled with beast.h
// there; apart so that other users of beast.h (parley-cli) neither parse nor
// link OpenSSL's TLS.
#pragma once

#include <boost/asio/ssl.hpp>
#include <boost/beast/ssl.hpp>

#include "net/beast.h"
