// The floors of the cluster benchmarks, in plain MPI with the same mpirun flags: a ping-pong of
// one small message between ranks 0 and 1, and a broadcast from rank 0 of a block of bytes. Rank
// 0 prints JSON: nanoseconds per round trip, bytes per second of broadcast.
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const std::size_t block = static_cast<std::size_t>(argc > 1 ? std::atol(argv[1]) : 64) << 20;
    char ping[64] = {};
    const int rounds = 2000;
    double round_trip = 0;
    if (size >= 2 && rank < 2) {
        for (int warm = 0; warm < 2; ++warm) {
            MPI_Barrier(MPI_COMM_WORLD);
            const double t0 = MPI_Wtime();
            for (int i = 0; i < rounds; ++i) {
                if (rank == 0) {
                    MPI_Send(ping, sizeof ping, MPI_BYTE, 1, 0, MPI_COMM_WORLD);
                    MPI_Recv(ping, sizeof ping, MPI_BYTE, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                } else {
                    MPI_Recv(ping, sizeof ping, MPI_BYTE, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                    MPI_Send(ping, sizeof ping, MPI_BYTE, 0, 0, MPI_COMM_WORLD);
                }
            }
            round_trip = (MPI_Wtime() - t0) / rounds;
        }
    } else {
        MPI_Barrier(MPI_COMM_WORLD);
        MPI_Barrier(MPI_COMM_WORLD);
    }
    std::vector<char> data(block);
    for (std::size_t i = 0; i < block; ++i)
        data[i] = static_cast<char>(i);
    double best = 1e30;
    for (int r = 0; r < 3; ++r) {
        MPI_Barrier(MPI_COMM_WORLD);
        const double t0 = MPI_Wtime();
        MPI_Bcast(data.data(), static_cast<int>(block), MPI_BYTE, 0, MPI_COMM_WORLD);
        MPI_Barrier(MPI_COMM_WORLD);
        const double t = MPI_Wtime() - t0;
        if (t < best) best = t;
    }
    if (rank == 0)
        std::printf("{\"mpi_ping_pong_ns\": %.1f, \"mpi_bcast_bytes_per_s\": %.1f}\n",
                    round_trip * 1e9, static_cast<double>(block) / best);
    MPI_Finalize();
    return 0;
}
