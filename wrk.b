Running 8s test @ http://127.0.0.1:19003/proxy/users/42
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.00ms    1.57ms  17.26ms   90.92%
    Req/Sec    52.95k    31.62k   88.69k    52.50%
  421048 requests in 8.00s, 75.09MB read
Requests/sec:  52627.89
Transfer/sec:      9.39MB
