// Beast and Asio for parley-cli: the project's aliases (net/beast.h) plus the
// C++20 coroutine support the client is written with. Only src/cli uses it.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "net/beast.h"

namespace parley::cli {
namespace asio = net::asio;
namespace beast = net::beast;
namespace http = net::http;
namespace websocket = net::websocket;
using tcp = net::tcp;
template <typename T>
using awaitable = asio::awaitable<T>;
}  // namespace parley::cli
