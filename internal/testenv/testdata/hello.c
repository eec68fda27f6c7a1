/* A static x86-64 program for the --exec tests: it prints its arguments
 * and calls getppid, which sctrace's own /init never makes. Build:
 * gcc -static -O2 -o hello hello.c */
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	printf("hello:");
	for (int i = 1; i < argc; i++)
		printf(" %s", argv[i]);
	printf("\n");
	fflush(stdout);
	return getppid() > 0 ? 0 : 1;
}
