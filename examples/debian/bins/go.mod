module example.org/nas/bins

go 1.19
